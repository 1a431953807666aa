"""Where the broker meets the project's database.

The store the router is handed (`store.OrmMessageStore`: it loads the topology
and the durable messages, and writes what the group-commit writer gives it),
and the way a change to the stored topology reaches the running router
(`signals`, `sync`): whoever saves an exchange, queue or binding row (a
service, the admin, any ORM call), the router mirrors it once the transaction
commits.

Imports the broker package and the models of exchanges, queues and bindings;
no app imports this package.
"""
