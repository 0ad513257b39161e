"""The package's names, imported on first use: `import jaxlmm` costs milliseconds, and JAX (about
2-3 s to import) loads only when a name that needs it is first touched — so the command line can
refuse a bad argument at once. The names and their modules are read from the
`if TYPE_CHECKING:` block of the package's `__init__.py`, the one list that type checkers and the
documentation read as well."""

from __future__ import annotations

import ast
import importlib
import importlib.util
from pathlib import Path


def exports(init_file: str) -> dict:
    """{public name: (relative module, attribute or None for a submodule)} from the imports of
    the `if TYPE_CHECKING:` block of `init_file`."""
    tree = ast.parse(Path(init_file).read_text(encoding="utf-8"))
    names = {}
    for node in tree.body:
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            for statement in node.body:
                if isinstance(statement, ast.ImportFrom):
                    module = "." * statement.level + (statement.module or "")
                    for alias in statement.names:
                        public = alias.asname or alias.name
                        names[public] = (module, alias.name) if statement.module else (module + alias.name, None)
    return names


def attach(package: str, init_file: str):
    """(`__getattr__`, `__dir__`, `__all__`) for the package: each name imported once, on first use."""
    table = exports(init_file)

    def __getattr__(name: str):
        if name not in table:
            if not name.startswith("__") and importlib.util.find_spec(f"{package}.{name}") is not None:
                return importlib.import_module(f".{name}", package)  # a subpackage, as `import` would set it
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        module, attribute = table[name]
        value = importlib.import_module(module, package)
        if attribute is not None:
            value = getattr(value, attribute)
        globals_of_package = importlib.import_module(package).__dict__
        globals_of_package[name] = value
        return value

    def __dir__():
        return sorted(table)

    return __getattr__, __dir__, sorted(table)
