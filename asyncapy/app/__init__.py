"""Layer 4, application: filters, dependencies, routing, middleware, lifespan and configuration."""
