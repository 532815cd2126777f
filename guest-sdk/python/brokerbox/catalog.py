"""The catalog: services and plans, as plain dataclasses with OSB's defaults.

    Service("svc-id", "files", "A file per instance", bindable=True,
            plans=[Plan("plan-id", "small", "A small file")])
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional


@dataclass
class MaintenanceInfo:
    """OSB `maintenance_info`: the version of a plan's maintenance state."""

    version: str
    description: Optional[str] = None


@dataclass
class DashboardClient:
    """OSB `dashboard_client`: the OAuth2 client of a service's dashboard."""

    id: str
    secret: str
    redirect_uri: Optional[str] = None


@dataclass
class Plan:
    """One OSB plan. `None` leaves a field to the service (or to OSB's default)."""

    id: str
    name: str
    description: str
    metadata: Optional[dict[str, Any]] = None
    free: Optional[bool] = None
    bindable: Optional[bool] = None
    plan_updateable: Optional[bool] = None
    #: OSB `schemas` object: JSON Schemas for instance create/update and binding create.
    schemas: Optional[dict[str, Any]] = None
    maximum_polling_duration: Optional[int] = None
    maintenance_info: Optional[MaintenanceInfo] = None
    binding_rotatable: Optional[bool] = None


@dataclass
class Service:
    """One OSB service offering with its plans (at least one)."""

    id: str
    name: str
    description: str
    plans: list[Plan] = field(default_factory=list)
    bindable: bool = False
    tags: list[str] = field(default_factory=list)
    requires: list[str] = field(default_factory=list)
    instances_retrievable: bool = False
    bindings_retrievable: bool = False
    allow_context_updates: bool = False
    metadata: Optional[dict[str, Any]] = None
    dashboard_client: Optional[DashboardClient] = None
    plan_updateable: bool = False
    binding_rotatable: bool = False

    def plan(self, plan: Plan) -> "Service":
        """Adds `plan` and returns the service, for building a catalog in one expression."""
        self.plans.append(plan)
        return self
