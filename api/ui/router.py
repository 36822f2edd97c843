"""The dashboard's routes, mounted by the app factory (api/app.py): its pages, its static
files (public: not authenticated, not rate limited), the CSRF guard on every
state-changing request, errors as pages, and the template engine."""

from __future__ import annotations

from litestar import Router
from litestar.di import Provide
from litestar.plugins.jinja import JinjaTemplateEngine
from litestar.static_files import create_static_files_router
from litestar.template.config import TemplateConfig

from api.errors import EXCEPTION_HANDLERS
from api.ui.audit_pages import AuditPages
from api.ui.deployment_actions import DeploymentActions
from api.ui.deployment_pages import DeploymentPages
from api.ui.job_editor import JobEditor
from api.ui.job_pages import JobPages
from api.ui.live import provide_live_feed
from api.ui.pages import SessionPages
from api.ui.pipeline_actions import PipelineActions
from api.ui.pipeline_editor import PipelineEditor
from api.ui.pipeline_pages import PipelinePages
from api.ui.run_pages import RunPages
from api.ui.views import STATIC, TEMPLATES, RenewedCookie, csrf_guard, ui_error


def ui_router() -> Router:
    return Router(
        path="/",
        route_handlers=[
            SessionPages,
            PipelinePages,
            PipelineActions,
            PipelineEditor,
            RunPages,
            DeploymentPages,
            DeploymentActions,
            JobPages,
            JobEditor,
            AuditPages,
            create_static_files_router(
                path="/ui/static",
                directories=[STATIC],
                opt={"public": True},
                include_in_schema=False,
            ),
        ],
        dependencies={"live_feed": Provide(provide_live_feed, sync_to_thread=False)},
        guards=[csrf_guard],
        middleware=[RenewedCookie()],
        # Every kind the API maps (a layer's handler for a base class would lose to the
        # app's for a subclass): the same status and message, as a page.
        exception_handlers={kind: ui_error for kind in EXCEPTION_HANDLERS},
        include_in_schema=False,
    )


def template_config() -> TemplateConfig[JinjaTemplateEngine]:
    return TemplateConfig(directory=TEMPLATES, engine=JinjaTemplateEngine)
