"""Shadows the real `google` package for tests: an interpreter "without google.protobuf"."""

raise ModuleNotFoundError("No module named 'google.protobuf' (hidden by pypool's tests)",
                          name="google.protobuf")
