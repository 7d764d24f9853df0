"""Code the Lambda functions share: configuration, database access, auth, HTTP shape."""
