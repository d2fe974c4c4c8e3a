import Essentials

/// The writer lives in Essentials (the store writes events with it too); this name keeps it
/// in reach of Control's files and of every module that imports Control.
public typealias JSONWriter = Essentials.JSONWriter
