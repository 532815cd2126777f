"""python-file-broker: the original Python test service, ported to brokerbox.

Provision writes a file named after the instance, holding its plan as JSON, into the directory
the runtime grants the broker; bind returns credentials `{"file": path}`; deprovision removes
the file. The "slow" plan provisions as a long operation: accepted at once, the file written
when the platform polls `last_operation`.
"""

import json
import os

from brokerbox import (
    Accepted, BadRequest, Broker, Gone, Internal, Plan, Service,
    Succeeded, Unprocessable, config, export, files_dir, log,
)

PLANS = [("small", "A small file"), ("large", "A large file"), ("slow", "A file written later")]


def service_id() -> str:
    # `[env]` is read per call: the module's top level runs once, when the component is built.
    return config("SERVICE_ID", "9a3e5f10-3b7c-4c1e-8d2a-6f0b1c2d3e01")


def plans() -> dict:
    return {f"{service_id()}-{name}": (name, text) for name, text in PLANS}


def instance_file(instance_id: str) -> str:
    ok = 0 < len(instance_id) <= 255 and not instance_id.startswith(".") and all(
        c.isascii() and (c.isalnum() or c in "-_.") for c in instance_id)
    if not ok:
        raise BadRequest("instance id must be 1 to 255 letters, digits, '-', '_' and '.', "
                         "not starting with '.'")
    directory = files_dir()
    if directory is None:
        raise Internal("python-file-broker needs the `files` grant in its manifest")
    return os.path.join(directory, instance_id)


def write_plan(instance_id: str, plan_id: str) -> None:
    if plan_id not in plans():
        raise BadRequest(f"unknown plan {plan_id}")
    name, text = plans()[plan_id]
    with open(instance_file(instance_id), "w") as f:
        json.dump({"id": plan_id, "name": name, "description": text}, f)


class FileBroker(Broker):
    def catalog(self):
        return [Service(service_id(), "python-file-service", "A file per instance",
                        plans=[Plan(id, name, text) for id, (name, text) in plans().items()],
                        bindable=True, plan_updateable=True, instances_retrievable=True,
                        bindings_retrievable=True, tags=["file", "python"])]

    def provision(self, request):
        if plans().get(request.plan_id, ("",))[0] == "slow":
            return Accepted({"plan": request.plan_id})
        write_plan(request.instance_id, request.plan_id)
        log.info(f"wrote the file of instance {request.instance_id}")

    def last_operation(self, request):
        write_plan(request.instance_id, request.operation_data["plan"])
        return Succeeded("the file is written")

    def update(self, request):
        if request.plan_id is not None:
            write_plan(request.instance_id, request.plan_id)

    def deprovision(self, request):
        try:
            os.remove(instance_file(request.instance_id))
        except FileNotFoundError:
            raise Gone(f"instance {request.instance_id} has no file")

    def bind(self, request):
        path = instance_file(request.instance_id)
        if not os.path.exists(path):
            raise Unprocessable(f"instance {request.instance_id} has no file")
        return {"file": path}


Osb = export(FileBroker)
