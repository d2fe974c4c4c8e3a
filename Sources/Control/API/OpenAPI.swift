/// The control API's OpenAPI 3.1 document (Sources/Control/openapi.json, compiled in so the
/// static binary carries it), served at GET /v1/openapi.json.
public enum OpenAPI {
    public static let document = String(decoding: PackageResources.openapi_json, as: UTF8.self)
}
