//! Delivery to the app: answers, retries, dead letters, poison limit, health pause, concurrency, drain (issue 11 B.5-B.7).
