"""Coalition: a gRPC hub for one loyalty currency shared by the partners of a group."""
