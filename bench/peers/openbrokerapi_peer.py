"""The bench's Python peer: the file broker written natively on openbrokerapi (Flask), served
by gunicorn. The same logic as examples/file-broker: a file per instance, a bind answers
{"file": path}. State is the files only (openbrokerapi keeps none), nothing is fsync'd.

Settings from the environment: PEER_BROKER (the broker name; credentials NAME/NAME-secret),
PEER_FILES (the directory of instance files), PEER_CATALOG (the catalog JSON to serve).
"""

import json
import logging
import os

from flask import Flask
from openbrokerapi import api, errors
from openbrokerapi.catalog import ServicePlan
from openbrokerapi.service_broker import (
    Binding,
    DeprovisionServiceSpec,
    ProvisionedServiceSpec,
    Service,
    ServiceBroker,
    UnbindSpec,
)

NAME = os.environ.get("PEER_BROKER", "file-broker")
FILES = os.environ["PEER_FILES"]
CATALOG = json.loads(os.environ["PEER_CATALOG"])


def instance_file(instance_id):
    return os.path.join(FILES, instance_id)


class FileBroker(ServiceBroker):
    def catalog(self):
        return [
            Service(
                id=s["id"],
                name=s["name"],
                description=s["description"],
                bindable=s.get("bindable", False),
                plans=[
                    ServicePlan(id=p["id"], name=p["name"], description=p["description"])
                    for p in s["plans"]
                ],
            )
            for s in CATALOG["services"]
        ]

    def provision(self, instance_id, details, async_allowed, **kwargs):
        path = instance_file(instance_id)
        if os.path.exists(path):
            raise errors.ErrInstanceAlreadyExists()
        with open(path, "w") as f:
            json.dump({"plan_id": details.plan_id}, f)
        return ProvisionedServiceSpec()

    def bind(self, instance_id, binding_id, details, async_allowed, **kwargs):
        return Binding(credentials={"file": instance_file(instance_id)})

    def unbind(self, instance_id, binding_id, details, async_allowed, **kwargs):
        return UnbindSpec(is_async=False)

    def deprovision(self, instance_id, details, async_allowed, **kwargs):
        path = instance_file(instance_id)
        if not os.path.exists(path):
            raise errors.ErrInstanceDoesNotExist()
        os.remove(path)
        return DeprovisionServiceSpec(is_async=False)


app = Flask(__name__)
app.register_blueprint(
    api.get_blueprint(
        FileBroker(),
        api.BrokerCredentials(NAME, NAME + "-secret"),
        logging.getLogger("peer"),
    ),
    url_prefix="/brokers/" + NAME,
)
