//! The messages of Prometheus remote write 1.0 (`prompb/remote.proto` and `types.proto`), the
//! fields tallyd sends: a `WriteRequest` of `TimeSeries` (labels and samples) and the
//! families' `MetricMetadata`.

/// `WriteRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct WriteRequest {
    /// The series, each with its samples.
    #[prost(message, repeated, tag = "1")]
    pub(crate) timeseries: Vec<TimeSeries>,
    /// The families' type and help.
    #[prost(message, repeated, tag = "3")]
    pub(crate) metadata: Vec<MetricMetadata>,
}

/// `TimeSeries`: labels sorted by name, `__name__` among them.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct TimeSeries {
    /// The labels.
    #[prost(message, repeated, tag = "1")]
    pub(crate) labels: Vec<Label>,
    /// The samples, oldest first.
    #[prost(message, repeated, tag = "2")]
    pub(crate) samples: Vec<Sample>,
}

/// `Label`.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct Label {
    /// The name.
    #[prost(string, tag = "1")]
    pub(crate) name: String,
    /// The value.
    #[prost(string, tag = "2")]
    pub(crate) value: String,
}

/// `Sample`.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct Sample {
    /// The value.
    #[prost(double, tag = "1")]
    pub(crate) value: f64,
    /// Milliseconds since the Unix epoch.
    #[prost(int64, tag = "2")]
    pub(crate) timestamp: i64,
}

/// `MetricMetadata`.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct MetricMetadata {
    /// `MetricType`: 1 counter, 2 gauge, 3 histogram, 5 summary, 0 unknown.
    #[prost(int32, tag = "1")]
    pub(crate) r#type: i32,
    /// The family name.
    #[prost(string, tag = "2")]
    pub(crate) metric_family_name: String,
    /// The HELP text.
    #[prost(string, tag = "4")]
    pub(crate) help: String,
}
