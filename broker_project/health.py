"""`GET /health`: what this node is, and whether it can serve (issue 6).

For load balancers and supervisors: 200 while this node reaches a router
(it is the router, or its cluster link follows one), 503 otherwise, e.g. on
an edge during a failover. The body says which role the node has now:
`router`, `standby` (a router candidate serving as an edge), or `edge`.
"""

from __future__ import annotations

from django.http import HttpRequest, JsonResponse

from broker_project.cluster.edge import current_link
from broker_project.runtime import current_runtime


def health(request: HttpRequest) -> JsonResponse:
    link = current_link()
    if current_runtime() is not None:
        role, router = "router", True
    elif link is not None:
        role, router = ("standby" if link.candidate else "edge"), link.router_known
    else:
        role, router = "none", False
    body = {"role": role, "router": router, "cluster": link is not None}
    return JsonResponse(body, status=200 if router else 503)
