"""tenant_svc's REST role: HTTP/JSON transcoded from the google.api.http annotations, the OpenAPI
document, and the tenant portal (``python -m tenant_svc.rest``)."""

from tenant_svc.rest.front import build_app
from tenant_svc.rest.settings import RestSettings

__all__ = ["RestSettings", "build_app"]
