"""One package per Lambda function; each imports only what it uses."""
