# Test stand-in package (see assets/README in the test project).
