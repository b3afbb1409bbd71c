"""Bridges to real hosts: OpenCode (:mod:`.opencode`) and Claude Code (:mod:`.claude`).

Both install an MCP server entry (``opensage mcp``), forward session events to
``opensage hook`` and remove exactly what they added on uninstall.
"""
