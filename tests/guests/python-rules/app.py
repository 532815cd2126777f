"""python-rules: a test-only Python broker whose provision does what its parameters say, so the
end-to-end tests can check how the runtime treats a Python guest:

- {"raise": "Conflict"} raises that SDK exception class (any of them, or "ValueError");
- {"loop": true} spins forever (the call's deadline or fuel must stop it);
- {"bomb": true} allocates until the memory cap stops it;
- {"kv": "value"} stores the value in kv under the instance id; bind returns it as credentials;
- {"config": "KEY"} answers with the `[env]` value of KEY as the dashboard URL;
- {"fetch": URL} GETs URL with the SDK's `http` and answers "STATUS BODY" as the dashboard URL;
- {"hold": N} opens N files in the files directory and keeps them open (module state);
- {"count": true} answers how many such calls this instance has served, as the dashboard URL
  (1 on a fresh instance: more only where the manifest lets calls reuse an instance);
- otherwise the instance is provisioned, and {"async": true} makes it a long operation.
"""

import builtins

import brokerbox
from brokerbox import (
    Accepted, Broker, InProgress, InstanceResult, Plan, Service, Succeeded, config, files_dir,
    http, kv,
)


# Counts {"count": true} provisions: module state lives as long as the instance.
counted = 0
# Files {"hold": N} keeps open.
held = []


class Rules(Broker):
    def catalog(self):
        return Service("python-rules-service", "python-rules", "Does what it is told",
                       bindable=True, plan_updateable=True,
                       plans=[Plan("python-rules-plan", "default", "The only plan")])

    def provision(self, request):
        p = request.parameters
        if p.get("count"):
            global counted
            counted += 1
            return InstanceResult(dashboard_url=str(counted))
        if "hold" in p:
            for i in range(p["hold"]):
                held.append(open(f"{files_dir()}/held-{len(held)}", "w"))
            return None
        if "raise" in p:
            cls = getattr(brokerbox, p["raise"], None) or getattr(builtins, p["raise"])
            raise cls(f"raised {p['raise']}")
        if p.get("loop"):
            while True:
                pass
        if p.get("bomb"):
            hoard = []
            while True:
                hoard.append(bytearray(1024 * 1024))
        if "kv" in p:
            kv.set_json(request.instance_id, p["kv"])
        if "fetch" in p:
            response = http.get(p["fetch"])
            return InstanceResult(dashboard_url=f"{response.status} {response.text()}")
        if "config" in p:
            return InstanceResult(dashboard_url=config(p["config"], "unset"))
        if p.get("async"):
            return Accepted({"instance": request.instance_id, "polls": 0})
        return None

    def last_operation(self, request):
        data = request.operation_data
        if data["polls"] < 1:
            return InProgress("still going", {**data, "polls": data["polls"] + 1})
        return Succeeded(f"done after {data['polls'] + 1} polls")

    def deprovision(self, request):
        kv.delete(request.instance_id)

    def bind(self, request):
        return {"stored": kv.get_json(request.instance_id)}


Osb = brokerbox.export(Rules)
