"""The codec server: `POST /codec/encode` and `POST /codec/decode` (admin keys only).

Temporal's codec server protocol: the body is `{"payloads": [...]}`, each payload in
protobuf's JSON form (metadata values and data base64), the answer the same shape with
every payload encoded or decoded, in order. The Temporal UI (started by `colony up` with
`--ui-codec-endpoint <api>/codec`) and `temporal` CLI users call it to read histories
that the server stores encrypted (core/codec.py). Payloads that cannot be decoded here
(an unknown key, altered ciphertext, or JSON naming another tenant) come back as they
were, so one bad payload does not hide a whole history.

Browsers call it across origins: `install_cors` answers preflights from the UI's origin
for these paths only.
"""

import base64
import binascii
import json
from collections.abc import Awaitable, Callable
from typing import Annotated
from urllib.parse import urlsplit

from fastapi import APIRouter, FastAPI, Header, Request, Response
from pydantic import BaseModel, ConfigDict, Field
from temporalio.api.common.v1 import Payload

from api.deps import AdminDep, SettingsDep
from api.errors import error_response
from core.codec import EncryptionCodec, PayloadKeyError, codec_from_settings
from core.errors import InvalidInput, NotFound
from core.settings import Settings
from core.tenants import Principal

router = APIRouter(prefix="/codec", tags=["codec"])

PREFIX = "/codec/"


class CodecPayload(BaseModel):
    """One Temporal payload in protobuf JSON: base64 metadata values and data."""

    model_config = ConfigDict(extra="ignore")

    metadata: dict[str, str] = Field(default_factory=dict, max_length=64)
    data: str = ""


class CodecPayloads(BaseModel):
    """A list of payloads, in and out."""

    payloads: list[CodecPayload] = Field(max_length=10_000)


NamespaceHeader = Annotated[
    str | None,
    Header(alias="X-Namespace", description="the Temporal namespace the payloads belong to"),
]


@router.post("/encode", response_model=CodecPayloads, responses={404: {}, 422: {}})
async def encode(
    body: CodecPayloads,
    request: Request,
    principal: AdminDep,
    settings: SettingsDep,
    namespace: NamespaceHeader = None,
) -> CodecPayloads:
    """Encrypt payloads with the current payload key (admin keys only)."""
    _check_namespace(settings, namespace)
    codec = _codec(request)
    return CodecPayloads(payloads=[_public(codec.encrypt(_payload(p))) for p in body.payloads])


@router.post("/decode", response_model=CodecPayloads, responses={404: {}, 422: {}})
async def decode(
    body: CodecPayloads,
    request: Request,
    principal: AdminDep,
    settings: SettingsDep,
    namespace: NamespaceHeader = None,
) -> CodecPayloads:
    """Decrypt payloads (admin keys only).

    Those this API cannot decrypt, or whose JSON names another tenant, come back unchanged.
    """
    _check_namespace(settings, namespace)
    codec = _codec(request)
    return CodecPayloads(
        payloads=[_public(_decoded(codec, _payload(p), principal)) for p in body.payloads]
    )


def _codec(request: Request) -> EncryptionCodec:
    codec: EncryptionCodec | None = getattr(request.app.state, "codec", None)
    if codec is None:
        codec = request.app.state.codec = codec_from_settings(request.app.state.settings)
    return codec


def _check_namespace(settings: Settings, namespace: str | None) -> None:
    if namespace and namespace != settings.temporal_namespace:
        raise NotFound(f"this codec serves namespace {settings.temporal_namespace!r} only")


def _decoded(codec: EncryptionCodec, payload: Payload, principal: Principal) -> Payload:
    try:
        plain = codec.decrypt(payload)
    except PayloadKeyError:
        return payload
    if plain is not payload and _other_tenant(plain, principal.tenant_id):
        return payload
    return plain


def _other_tenant(payload: Payload, tenant_id: str) -> bool:
    """True when a JSON payload is an object naming a tenant other than `tenant_id`."""
    if not payload.metadata.get("encoding", b"").startswith(b"json/"):
        return False
    try:
        value = json.loads(payload.data)
    except (ValueError, RecursionError):
        return False
    named = value.get("tenant_id") if isinstance(value, dict) else None
    return isinstance(named, str) and named != tenant_id


def _payload(body: CodecPayload) -> Payload:
    try:
        return Payload(
            metadata={k: base64.b64decode(v, validate=True) for k, v in body.metadata.items()},
            data=base64.b64decode(body.data, validate=True),
        )
    except (binascii.Error, ValueError):
        raise InvalidInput("payload metadata values and data must be base64") from None


def _public(payload: Payload) -> CodecPayload:
    return CodecPayload(
        metadata={k: base64.b64encode(v).decode() for k, v in payload.metadata.items()},
        data=base64.b64encode(payload.data).decode(),
    )


# -- CORS ------------------------------------------------------------------------------


def allowed_origins(settings: Settings) -> set[str]:
    """Browser origins that may call the codec: configured, or the embedded UI's."""
    if settings.codec_cors_origins:
        return {o.rstrip("/") for o in settings.codec_cors_origins}
    if settings.effective_temporal_ui_url is None:
        return set()
    parts = urlsplit(settings.effective_temporal_ui_url)
    ui = f"{parts.scheme}://{parts.netloc}"
    origins = {ui}
    if ui.startswith("http://localhost:"):
        origins.add(ui.replace("http://localhost:", "http://127.0.0.1:", 1))
    return origins


_CORS_HEADERS = {
    "Access-Control-Allow-Methods": "POST, OPTIONS",
    "Access-Control-Allow-Headers": "Authorization, Content-Type, X-Namespace",
    "Access-Control-Allow-Credentials": "true",
    "Access-Control-Max-Age": "600",
    "Vary": "Origin",
}


def install_cors(app: FastAPI, settings: Settings) -> None:
    """Let the Temporal UI's origin call `/codec/*` from a browser (other paths: no CORS)."""
    origins = allowed_origins(settings)

    @app.middleware("http")
    async def codec_cors(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        origin = request.headers.get("origin")
        if not request.url.path.startswith(PREFIX) or origin is None:
            return await call_next(request)
        allowed = origin.rstrip("/") in origins
        if request.method == "OPTIONS" and "access-control-request-method" in request.headers:
            if not allowed:
                return error_response(403, "forbidden", f"origin {origin!r} may not call the codec")
            return Response(
                status_code=204, headers={"Access-Control-Allow-Origin": origin, **_CORS_HEADERS}
            )
        response = await call_next(request)
        if allowed:
            response.headers.update({"Access-Control-Allow-Origin": origin, **_CORS_HEADERS})
        return response
