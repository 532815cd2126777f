"""{{name}}: an Open Service Broker for brokerbox.

Provision records the instance's plan and parameters in the runtime's key-value store; bind
hands out credentials for it; deprovision forgets it. Replace the bodies with what your service
really does, then `brokerbox build` (or `brokerbox dev` to rebuild on every save).
"""

from brokerbox import Broker, Gone, Plan, Service, Unprocessable, export, kv, log

SERVICE_ID = "{{service_id}}"
PLAN_ID = "{{plan_id}}"


class {{type_name}}(Broker):
    def catalog(self):
        return [Service(SERVICE_ID, "{{name}}", "{{name}}, served by brokerbox", bindable=True,
                        plans=[Plan(PLAN_ID, "standard", "A standard {{name}}")])]

    def provision(self, request):
        kv.set_json(f"instance/{request.instance_id}",
                    {"plan": request.plan_id, "parameters": request.parameters})
        log.info(f"provisioned {request.instance_id}")

    def deprovision(self, request):
        key = f"instance/{request.instance_id}"
        if kv.get(key) is None:
            raise Gone(f"no instance {request.instance_id}")
        kv.delete(key)

    def bind(self, request):
        record = kv.get_json(f"instance/{request.instance_id}")
        if record is None:
            raise Unprocessable(f"no instance {request.instance_id}")
        return {
            "uri": f"https://{request.instance_id}.{{name}}.example.com",
            "username": f"user-{request.binding_id}",
            "plan": record["plan"],
        }


Osb = export({{type_name}})
