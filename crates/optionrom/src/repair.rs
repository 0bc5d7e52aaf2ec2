//! Repairing existing images (checksum, size). Filled in below.
