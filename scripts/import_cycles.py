"""An import-linter contract type: no import cycles between the modules of a package, at any depth.

import-linter's own ``acyclic_siblings`` works on sibling *packages*, where two domain packages that import each
other's different modules (rooms' service reads tracks' repository, tracks' service reads rooms' repository) count
as a cycle although no module does; this checks modules. ``TYPE_CHECKING`` imports count, like any other: a cycle
hidden from the interpreter still ties the modules together. Used by ``[tool.importlinter]`` in pyproject.toml.
"""

from __future__ import annotations

from typing import Any

import grimp
from importlinter.application import output
from importlinter.domain import fields
from importlinter.domain.contract import Contract, ContractCheck


class NoModuleCycles(Contract):
    type_name = "no_module_cycles"
    containers = fields.ListField(subfield=fields.StringField())

    def check(self, graph: grimp.ImportGraph, verbose: bool) -> ContractCheck:
        containers: list[str] = list(self.containers)  # type: ignore[call-overload]
        modules = sorted(m for c in containers for m in graph.find_descendants(c) | {c})
        cycles: dict[frozenset[str], list[str]] = {}
        for importer in modules:
            for imported in sorted(graph.find_modules_directly_imported_by(importer)):
                if imported not in modules:
                    continue
                back = graph.find_shortest_chain(importer=imported, imported=importer)
                if back is not None:
                    cycle = [importer, *back]
                    cycles.setdefault(frozenset(cycle), cycle)
        return ContractCheck(kept=not cycles, warnings=None, metadata={"cycles": list(cycles.values())})

    def render_broken_contract(self, check: ContractCheck) -> None:
        cycles: list[Any] = check.metadata["cycles"]
        for cycle in cycles:
            output.print_error(" -> ".join(cycle))
            output.new_line()
