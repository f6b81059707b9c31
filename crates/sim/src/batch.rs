//! Batch APIs (interim: routes nothing yet).

use std::sync::Arc;

use bytes::Bytes;
use http::request::Parts;
use http::{Method, Response};
use http_body::Body;
use tollgate_core::BoxError;

use crate::body::SimBody;
use crate::state::Shared;
use crate::stats::LogEntry;

#[derive(Debug, Default)]
pub(crate) struct Store;

#[derive(Debug)]
pub(crate) enum Route {}

pub(crate) fn route(_method: &Method, _path: &str) -> Option<Route> {
    None
}

pub(crate) async fn handle<B>(
    _shared: &Arc<Shared>,
    route: Route,
    _parts: &Parts,
    _body: B,
    _entry: &mut LogEntry,
) -> Response<SimBody>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    match route {}
}
