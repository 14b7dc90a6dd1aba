"""The kernel-language compiler: parse, check, lower to one intermediate form, build a backend."""
