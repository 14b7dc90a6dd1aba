"""The lark grammar of the kernel language, shipped as package data (kernel.lark)."""
