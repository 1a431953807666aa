"""Django's Tasks framework where it is: `django.tasks` (Django 6.0 and newer), or the
`django-tasks` backport (`django_tasks`) on Django 5.2. Same classes, two homes; typed
`Any` here, as the two are different classes to a type checker."""

from __future__ import annotations

import importlib
from typing import Any


def _modules() -> tuple[Any, Any, Any, Any, Any, Any]:
    for package, json_module in (("django.tasks", "django.utils.json"), ("django_tasks", "django_tasks.utils")):
        try:
            root = importlib.import_module(package)
        except ImportError:
            continue
        return (
            root,
            importlib.import_module(f"{package}.base"),
            importlib.import_module(f"{package}.backends.base"),
            importlib.import_module(f"{package}.exceptions"),
            importlib.import_module(f"{package}.signals"),
            importlib.import_module(json_module),
        )
    raise ImportError("Django's Tasks framework is missing: Django 6, or `pip install django-tasks` on Django 5.2")


_root, _base, _backends, _exceptions, signals, _json = _modules()

task_backends: Any = _root.task_backends
task: Any = _root.task
BaseTaskBackend: Any = _backends.BaseTaskBackend
Task: Any = _base.Task
TaskContext: Any = _base.TaskContext
TaskError: Any = _base.TaskError
TaskResult: Any = _base.TaskResult
TaskResultStatus: Any = _base.TaskResultStatus
TaskResultDoesNotExist: Any = _exceptions.TaskResultDoesNotExist
InvalidTask: Any = getattr(_exceptions, "InvalidTask", None) or _exceptions.InvalidTaskError  # the backport's name
normalize_json: Any = _json.normalize_json


def set_field(result: Any, name: str, value: Any) -> None:
    """TaskResult is a frozen dataclass: Django's own backends set its fields this way."""
    object.__setattr__(result, name, value)
