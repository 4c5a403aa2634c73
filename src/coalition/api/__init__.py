"""The gRPC API: thin servicers (parse, authorise, call, map), interceptors and the server."""
