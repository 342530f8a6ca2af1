//! The StatsD / DogStatsD line protocol, and nothing else: [`parse`] turns one line of bytes
//! into a [`parse::Line`] or a [`parse::RejectReason`], without sockets and without allocating.

pub mod parse;
