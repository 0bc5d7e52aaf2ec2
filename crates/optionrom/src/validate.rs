//! Rule profiles. Filled in below.
