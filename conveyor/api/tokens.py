"""API tokens, for admins: create (the secret is shown once), list, revoke."""

from __future__ import annotations

from flask import Response

from .models import CreateToken, NewToken, TokenList, TokenModel
from .routing import Call, Reply


def create_token(call: Call[CreateToken, None]) -> Reply:
    """A new token; its secret is in this answer and nowhere else, ever."""
    token, secret = call.services.tokens.create(call.body.name, call.body.role)
    model = NewToken(**TokenModel.of(token).model_dump(), secret=secret)
    return Reply(model, 201)


def list_tokens(call: Call[None, None]) -> TokenList:
    """Every token, newest first (never a secret)."""
    return TokenList(items=[TokenModel.of(t) for t in call.services.tokens.list()])


def revoke_token(call: Call[None, None], token_id: str) -> Response:
    """Stop a token from working, at once."""
    call.services.tokens.revoke(token_id)
    return Response(status=204)
