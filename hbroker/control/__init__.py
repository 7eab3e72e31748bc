"""The IoT control plane: HARCP, the signed device control protocol (docs/harcp.md)."""
