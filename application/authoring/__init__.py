"""Authoring help (README "Authoring help"): drafts of pipelines from a description
(generator.py, with the phrases of phrases.py), drafts of a next revision from
instructions (regenerate.py), plain-language descriptions (describe.py) and findings
(analyze.py). Pure: the plugin catalog and the expression language reach it through
ports.py, so it imports neither infrastructure nor the API."""
