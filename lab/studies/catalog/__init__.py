"""The built-in studies, one small declaration per module; every module here is imported by the registry."""
