//! The controller's ports, handed to it by the binary: the transport (the settings cache the
//! workers read) and, optionally, the durable store. Each is connected by the caller's function
//! on first use and kept once connected, so the controller starts, and reports the backend in
//! its status, while Redis or the database is down.

use crate::error::ControllerError;
use futures::future::BoxFuture;
use jobsched_core::ports::{Store, Transport};
use std::future::Future;
use std::sync::Arc;

/// How to connect a port: called again after each failure, until it succeeds once.
type Connect<T> = Box<dyn Fn() -> BoxFuture<'static, jobsched_core::Result<Arc<T>>> + Send + Sync>;

/// A port connected on first use (one connect at a time; a failed one is tried again at the
/// next use).
struct Lazy<T: ?Sized> {
    connect: Connect<T>,
    cell: tokio::sync::OnceCell<Arc<T>>,
}

impl<T: ?Sized + Send + Sync + 'static> Lazy<T> {
    fn new<F, Fut>(connect: F) -> Lazy<T>
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = jobsched_core::Result<Arc<T>>> + Send + 'static,
    {
        Lazy {
            connect: Box::new(move || Box::pin(connect())),
            cell: tokio::sync::OnceCell::new(),
        }
    }

    fn ready(port: Arc<T>) -> Lazy<T> {
        let again = port.clone();
        Lazy {
            connect: Box::new(move || {
                let port = again.clone();
                Box::pin(async move { Ok(port) })
            }),
            cell: tokio::sync::OnceCell::new_with(Some(port)),
        }
    }

    async fn get(&self) -> jobsched_core::Result<Arc<T>> {
        self.cell
            .get_or_try_init(|| (self.connect)())
            .await
            .cloned()
    }
}

impl<T: ?Sized> std::fmt::Debug for Lazy<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let connected = self.cell.initialized();
        f.debug_struct("Lazy")
            .field("connected", &connected)
            .finish_non_exhaustive()
    }
}

/// A port connected on first use, or [`ready`](Port::ready).
pub struct Port<T: ?Sized>(Arc<Lazy<T>>);

impl<T: ?Sized> Clone for Port<T> {
    fn clone(&self) -> Self {
        Port(self.0.clone())
    }
}

impl<T: ?Sized> std::fmt::Debug for Port<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl<T: ?Sized + Send + Sync + 'static> Port<T> {
    /// Connected by `connect` on first use (retried at each use until it succeeds).
    pub fn connect_with<F, Fut>(connect: F) -> Port<T>
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = jobsched_core::Result<Arc<T>>> + Send + 'static,
    {
        Port(Arc::new(Lazy::new(connect)))
    }

    /// Already connected.
    pub fn ready(port: Arc<T>) -> Port<T> {
        Port(Arc::new(Lazy::ready(port)))
    }
}

/// The transport port (Redis in a cluster).
pub type TransportPort = Port<dyn Transport>;

/// The durable store port (Postgres in a cluster).
pub type StorePort = Port<dyn Store>;

/// What a port's failure to connect is, as the controller reports it. A public trait in a
/// private module: it can bound the impl on the public `Port` (a crate-private trait there
/// trips the `private_bounds` lint), yet nothing outside this file can name it.
mod backend {
    use super::{ControllerError, Store, Transport};

    pub trait Backend {
        /// The controller error for `source`.
        fn unreachable(source: jobsched_core::Error) -> ControllerError;
    }

    impl Backend for dyn Transport {
        fn unreachable(source: jobsched_core::Error) -> ControllerError {
            ControllerError::Redis { source }
        }
    }

    impl Backend for dyn Store {
        fn unreachable(source: jobsched_core::Error) -> ControllerError {
            ControllerError::Store { source }
        }
    }
}
use backend::Backend;

impl<T: ?Sized + Backend + Send + Sync + 'static> Port<T> {
    /// The connected port, connecting it first if it is not yet.
    pub(crate) async fn get(&self) -> Result<Arc<T>, ControllerError> {
        self.0.get().await.map_err(T::unreachable)
    }
}

/// What the controller writes to.
#[derive(Clone, Debug)]
pub struct Ports {
    /// The settings cache every worker reads (and its events).
    pub transport: TransportPort,
    /// The durable copy of the settings, and the `JobSchedule`s; without it only the
    /// transport is written and `JobSchedule`s are not followed.
    pub store: Option<StorePort>,
}
