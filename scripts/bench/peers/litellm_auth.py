# The key check of the LiteLLM peer in `npm run bench -- --peers` (scripts/bench/peers/litellm.ts).
#
# Per-key limits in LiteLLM's proxy belong to its virtual keys, which live in a Postgres database
# through Prisma, whose engines are downloaded at run time (not possible here). A custom auth
# function is LiteLLM's documented way to attach the same limits without a database: every caller
# is admitted, and with BENCH_MODEL_TPM_LIMIT (JSON: model -> tokens per minute) each API key gets
# that limit per model, which LiteLLM's own rate limiter then enforces.
import json
import os

from fastapi import Request
from litellm.proxy._types import UserAPIKeyAuth

_MODEL_TPM_LIMIT = json.loads(os.environ.get("BENCH_MODEL_TPM_LIMIT") or "null")


async def user_api_key_auth(request: Request, api_key: str) -> UserAPIKeyAuth:
    if _MODEL_TPM_LIMIT is None:
        return UserAPIKeyAuth(api_key=api_key)
    return UserAPIKeyAuth(api_key=api_key, metadata={"model_tpm_limit": _MODEL_TPM_LIMIT})
