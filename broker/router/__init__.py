"""The one interface in front of the router, whether it runs in this process
or across the cluster link."""
