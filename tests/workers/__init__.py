"""Child entry modules for the child-process tests (imported in children by module name)."""
