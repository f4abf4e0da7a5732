"""Operations: metrics, health, service manager notifications and logging. They read state; they never change it."""
