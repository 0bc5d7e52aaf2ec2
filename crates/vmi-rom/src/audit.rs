//! Static audit (below).
