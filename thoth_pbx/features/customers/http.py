"""Routes of the customers feature (admin API).

- `GET /api/admin/customers?account_id=&q=&limit=50`: identities, latest seen first; `q`
  matches the phone number, BSUID, username or profile name (a part of it).
- `GET /api/admin/customers/{id}`: one identity with the identities it replaced (number changes).
"""

from __future__ import annotations

from aiohttp import web
from sqlalchemy import or_, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from thoth_pbx.core.http import object_id
from thoth_pbx.core.validation import FieldError, integer
from thoth_pbx.features.customers.models import Customer
from thoth_pbx.features.customers.service import view


def customer_routes(sessions: async_sessionmaker[AsyncSession]) -> list[web.RouteDef]:
    async def listing(request: web.Request) -> web.Response:
        limit = integer("limit", request.query.get("limit", 50), minimum=1, maximum=500)
        query = select(Customer).order_by(Customer.last_seen_at.desc(), Customer.id.desc()).limit(limit)
        if "account_id" in request.query:
            query = query.where(Customer.account_id == integer("account_id", request.query["account_id"], minimum=1))
        text = request.query.get("q", "").strip()
        if len(text) > 200:
            raise FieldError("q", "must be at most 200 characters")
        if text:
            pattern = "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
            query = query.where(
                or_(
                    *(
                        column.ilike(pattern, escape="\\")
                        for column in (Customer.phone, Customer.bsuid, Customer.username, Customer.profile_name)
                    )
                )
            )
        async with sessions() as session:
            rows = (await session.scalars(query)).all()
        return web.json_response({"items": [view(r) for r in rows]})

    async def one(request: web.Request) -> web.Response:
        customer_id = object_id(request)
        async with sessions() as session:
            row = await session.get(Customer, customer_id)
            if row is None:
                raise FieldError("id", f"no customer with id {customer_id}", 404)
            previous = []
            current_id = row.id
            for _ in range(20):
                older = await session.scalar(select(Customer).where(Customer.replaced_by_id == current_id))
                if older is None:
                    break
                previous.append(view(older))
                current_id = older.id
        return web.json_response(view(row) | {"previous": previous})

    return [web.get("/api/admin/customers", listing), web.get("/api/admin/customers/{id}", one)]
