"""Share storage on a client party: share files, passcode encryption, export and its errors."""
