"""The customers feature as app.py wires it: the identities live in the callers' transactions
(messaging, calls); this part adds the admin's view."""

from __future__ import annotations

from thoth_pbx.features.customers.http import customer_routes
from thoth_pbx.features.deps import Deps, Wired


def wire(deps: Deps) -> Wired:
    return Wired(routes=customer_routes(deps.sessions))
