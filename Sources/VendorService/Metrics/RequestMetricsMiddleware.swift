import Hummingbird

/// Counts and times every request into ``VendorMetrics``, labelled by the matched route's template
/// (`context.endpointPath`, e.g. `/v1/plan`), never by the raw path: a path, a method or a header from
/// the network must not be able to add series (`/v1/plan/aaaa`, `/random-1`, `/random-2`, ... all count as
/// `unmatched`). Hummingbird's own `MetricsMiddleware` also labels by template, but it records into the
/// process-global `MetricsSystem` and labels unmatched requests by their raw method; this one writes into
/// the application's own registry and folds unknown methods into `other`.
///
/// Added first (outermost), so it sees the status ``ErrorBodyMiddleware`` answers with.
struct RequestMetricsMiddleware<Context: RequestContext>: RouterMiddleware {
    let metrics: VendorMetrics

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        let start = ContinuousClock.now
        do {
            let response = try await next(request, context)
            record(request, context: context, status: response.status.code, since: start)
            return response
        } catch {
            let status = (error as? any HTTPResponseError)?.status.code ?? 500
            record(request, context: context, status: status, since: start)
            throw error
        }
    }

    private func record(_ request: Request, context: Context, status: Int, since start: ContinuousClock.Instant) {
        // The router sets the matched route's template, or "NotFound" when no route (or no method of it) matched.
        let route = context.endpointPath.flatMap { $0 == "NotFound" ? nil : $0 } ?? VendorMetrics.unmatchedRoute
        metrics.request(route: route, method: request.method.rawValue, status: status, duration: ContinuousClock.now - start)
    }
}
