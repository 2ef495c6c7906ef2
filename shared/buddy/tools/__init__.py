"""Tools a mission can run, looked up by name in a registry."""

from buddy.tools.base import Reporter, Tool, ToolError, ToolRegistry, ToolResult
from buddy.tools.calculate import CalculateTool


def default_registry() -> ToolRegistry:
    return ToolRegistry([CalculateTool()])


__all__ = ["Reporter", "Tool", "ToolError", "ToolRegistry", "ToolResult", "default_registry"]
