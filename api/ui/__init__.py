"""The web dashboard at /ui: server-rendered pages (Jinja2) with htmx, served by the API
process itself (docs/architecture.md "Dashboard")."""
