"""What moves data: the municipal source, the byte pipe, the landing on the destination, one
municipality's sync, its retries and its failures. Knows nothing of daemons or people."""
