"""Offline rules_java: re-exports Bazel 4's native Java rules.

Bazel's own tools load these names from @rules_java; nothing in this project
builds Java code.
"""

java_binary = native.java_binary
java_import = native.java_import
java_library = native.java_library
java_package_configuration = native.java_package_configuration
java_plugin = native.java_plugin
java_runtime = native.java_runtime
java_test = native.java_test
java_toolchain = native.java_toolchain
