"""Pure domain: mission lifecycle, progress tracking, intent. No SDK imports."""
