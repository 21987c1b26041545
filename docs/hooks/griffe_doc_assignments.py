"""Griffe extension: docstrings assigned after the definition, `name.__doc__ = ...`.

A few objects share argument lists between their docstrings by assigning `__doc__` at
module level (e.g. `pcscale.nn.mlp` and `pcscale.nn.residual_mlp`, `pcscale.MuP` and
`pcscale.DepthMuP`). Griffe reads docstrings statically and would see none there; this
extension evaluates such assignments when they are built from string literals, `+` and
module-level string constants, and gives the object that docstring.
"""

from __future__ import annotations

import ast
import inspect

import griffe


def _evaluate(node: ast.AST, constants: dict[str, str]) -> str | None:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.Name):
        return constants.get(node.id)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        left, right = _evaluate(node.left, constants), _evaluate(node.right, constants)
        return None if left is None or right is None else left + right
    return None


class DocAssignments(griffe.Extension):
    def on_module_members(self, *, node, mod, agent, **kwargs) -> None:
        if not isinstance(node, ast.Module):  # dynamic inspection reads __doc__ itself
            return
        constants: dict[str, str] = {}
        for statement in node.body:
            if not isinstance(statement, ast.Assign) or len(statement.targets) != 1:
                continue
            target = statement.targets[0]
            value = _evaluate(statement.value, constants)
            if value is None:
                continue
            if isinstance(target, ast.Name):
                constants[target.id] = value
            elif (isinstance(target, ast.Attribute) and target.attr == "__doc__"
                  and isinstance(target.value, ast.Name) and target.value.id in mod.members):
                member = mod.members[target.value.id]
                if not member.is_alias:
                    member.docstring = griffe.Docstring(
                        inspect.cleandoc(value), lineno=statement.lineno,
                        endlineno=statement.end_lineno, parent=member,
                    )
