# Declarations that make Endpoint, Cluster and ClusterStats C types when cluster.py is
# compiled (an augmenting .pxd): the data plane takes and returns pooled connections as list
# operations and reads a cluster's settings, breakers and counters as struct members.

from backhaul.balance.circuit cimport CircuitBreakers as _CircuitBreakers
from backhaul.balance.endpoint cimport EndpointState


cdef class Endpoint(EndpointState):
    cdef public object address
    cdef public object cluster
    cdef public object connect_timeout
    cdef public object host
    cdef public list idle
    cdef public object idle_timeout
    cdef public object label
    cdef public object log_name
    cdef public object max_idle
    cdef public object port


cdef class ClusterStats:
    cdef public long long retries
    cdef public long long budget_exhausted
    cdef public long long no_healthy


cdef class Cluster:
    cdef public object balancer
    cdef public double body_idle
    cdef public _CircuitBreakers breakers
    cdef public object check
    cdef public object check_kind
    cdef public object check_schedule
    cdef public list check_tasks
    cdef public list checks_seen
    cdef public double connect_timeout
    cdef public bint discovered
    cdef public list endpoints
    cdef public object hash_key
    cdef public double idle_timeout
    cdef public Py_ssize_t head_bytes
    cdef public Py_ssize_t head_fields
    cdef public Py_ssize_t max_idle
    cdef public str name
    cdef public double response_headers_timeout
    cdef public object retry_budget
    cdef public object retry_policy
    cdef public object rng
    cdef public list shared_checks
    cdef public ClusterStats stats
    cdef public object sticky
    cdef public object tls
