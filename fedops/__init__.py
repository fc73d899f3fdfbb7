"""fedops: the plain, importable, unit-tested Python behind the invoke tasks."""
