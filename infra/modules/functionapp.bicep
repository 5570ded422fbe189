// The Function App on Flex Consumption (Python), running as the user-assigned identity with
// identity-based connections only (no keys, no connection strings), behind App Service
// Authentication with Entra ID (the console and the approvals API need a signed-in person).
param name string
param planName string
param location string
param tags object = {}
param identityId string
param identityClientId string
param storageBlobEndpoint string
param storageTableEndpoint string
param storageQueueEndpoint string
param deploymentContainerUrl string
param eventHubNamespace string // <name>.servicebus.windows.net
param defenderHub string
param diagnosticsHub string
param consumerGroup string
param appInsightsConnectionString string
@description('Client id of the Entra ID app registration users sign in to (it defines the Aegis.Approver, Aegis.Analyst and Aegis.Reader app roles).')
param authClientId string
param tenantId string = subscription().tenantId
@description('Optional: the Log Analytics workspace id (GUID) the log_analytics enricher queries.')
param logAnalyticsWorkspaceGuid string = ''
@description('Optional: the ARM id of the Microsoft Sentinel workspace (tickets and delivery).')
param sentinelWorkspaceId string = ''
@description('Where incidents are delivered: empty, or a comma-separated list of sentinel, teams, defender_xdr.')
param deliverers string = ''
param subscriptionTenants string = ''
param displayTimezone string = 'UTC'
@description('The inventory: subscriptions it reads (empty: all the identity can read), the tags it reads, the criticality weights and the findings\' severity.')
param inventorySubscriptions string = ''
param ownerTags string = 'owner,aegis-owner'
param criticalityTags string = 'criticality,aegis-criticality'
param classificationTags string = 'data-classification,dataclassification,data_classification'
param criticalityWeights string = 'critical=1,low=-1'
param findingSeverity string = 'low'
@description('The other regions\' diagnostics namespaces: [{region, namespace}]; the app consumes each (AEGIS_EVENTHUB_<REGION>).')
param regionalNamespaces array = []
@description('Optional ticket systems: their sites and accounts; the secrets stay in Key Vault (servicenow-password, jira-token) and reach the app as Key Vault references.')
param keyVaultName string = ''
param servicenowInstance string = ''
param servicenowUser string = ''
param jiraSite string = ''
param jiraUser string = ''
param jiraProject string = ''
param maximumInstanceCount int = 40
param instanceMemoryMB int = 2048

var consoleUrl = 'https://${name}.azurewebsites.net'

// the identity-based connection of each other region's diagnostics namespace (its ingest trigger's)
var regionalConnectionsByRegion = [for n in regionalNamespaces: [
  { name: 'AEGIS_EVENTHUB_${toUpper(n.region)}__fullyQualifiedNamespace', value: n.namespace }
  { name: 'AEGIS_EVENTHUB_${toUpper(n.region)}__credential', value: 'managedidentity' }
  { name: 'AEGIS_EVENTHUB_${toUpper(n.region)}__clientId', value: identityClientId }
]]
var regionalConnections = flatten(regionalConnectionsByRegion)
var regionNames = [for n in regionalNamespaces: n.region]
var staticSettings = [for s in items(union(settings, optional)): { name: s.key, value: s.value }]

// Every setting the app reads (aegis/settings.py, the Functions host). tests/test_infra.py fails if
// the code reads one that is not here, or if one here is read by nothing.
var settings = {
  AzureWebJobsStorage__credential: 'managedidentity'
  AzureWebJobsStorage__clientId: identityClientId
  AzureWebJobsStorage__blobServiceUri: storageBlobEndpoint
  AzureWebJobsStorage__queueServiceUri: storageQueueEndpoint
  AzureWebJobsStorage__tableServiceUri: storageTableEndpoint
  APPLICATIONINSIGHTS_CONNECTION_STRING: appInsightsConnectionString
  APPLICATIONINSIGHTS_AUTHENTICATION_STRING: 'ClientId=${identityClientId};Authorization=AAD'
  AEGIS_EVENTHUB__fullyQualifiedNamespace: eventHubNamespace
  AEGIS_EVENTHUB__credential: 'managedidentity'
  AEGIS_EVENTHUB__clientId: identityClientId
  AEGIS_DEFENDER_HUB: defenderHub
  AEGIS_DIAGNOSTICS_HUB: diagnosticsHub
  AEGIS_DIAGNOSTICS_REGIONS: join(regionNames, ',')
  AEGIS_CONSUMER_GROUP: consumerGroup
  AEGIS_STORE: 'table'
  AEGIS_TABLE_ENDPOINT: storageTableEndpoint
  AEGIS_BLOB_ENDPOINT: storageBlobEndpoint
  AEGIS_MANAGED_IDENTITY_CLIENT_ID: identityClientId
  AEGIS_LATENESS: 'PT1H'
  AEGIS_MAX_CLOCK_SKEW: 'PT5M'
  AEGIS_RETENTION: 'P30D'
  AEGIS_KEEP_EVENTS: 'evidence' // the stream stays in Event Hubs (and Capture or Log Analytics): no row per event
  AEGIS_MAX_BODY_BYTES: '1048576'
  AEGIS_MAX_DEPTH: '64'
  AEGIS_ARM_ENDPOINT: environment().resourceManager
  AEGIS_GRAPH_ENDPOINT: 'https://graph.microsoft.com/v1.0'
  AEGIS_MDE_ENDPOINT: 'https://api.security.microsoft.com'
  AEGIS_LOGS_ENDPOINT: 'https://api.loganalytics.io'
  AEGIS_ENRICHERS: empty(logAnalyticsWorkspaceGuid) ? 'defender,graph' : 'log_analytics,defender,graph'
  AEGIS_ENRICH_BUDGET: '20'
  AEGIS_CORROBORATORS: empty(logAnalyticsWorkspaceGuid) ? 'defender,entra' : 'defender,log_analytics,entra'
  AEGIS_DELIVERERS: deliverers
  AEGIS_TENANT_ID: tenant().tenantId // events that name no tenant belong to the deployment's
  AEGIS_TENANTS: subscriptionTenants
  AEGIS_DISPLAY_TIMEZONE: displayTimezone
  AEGIS_INVENTORY_SUBSCRIPTIONS: inventorySubscriptions
  AEGIS_OWNER_TAGS: ownerTags
  AEGIS_CRITICALITY_TAGS: criticalityTags
  AEGIS_CLASSIFICATION_TAGS: classificationTags
  AEGIS_CRITICALITY_WEIGHTS: criticalityWeights
  AEGIS_FINDING_SEVERITY: findingSeverity
  AEGIS_DELIVER_MIN_SEVERITY: 'medium'
  // Flex Consumption's App Service Authentication does not block unauthenticated callers (its documentation):
  // the app believes only an Entra ID token it checks itself (aegis/approvals/identity.py, from_bearer)
  AEGIS_CONSOLE_AUTH: 'bearer'
  AEGIS_AUTH_CLIENT_ID: authClientId
  AEGIS_BOT_APP_ID: identityClientId // the Azure Bot runs on the app's user-assigned identity (UserAssignedMSI)
  AEGIS_BOT_SERVICE_URL: 'https://smba.trafficmanager.net/teams/'
  AEGIS_BOT_OPENID_METADATA: 'https://login.botframework.com/v1/.well-known/openidconfiguration'
  AEGIS_TRACE: 'azure' // OpenTelemetry to Application Insights (host.json telemetryMode), with the managed identity
  AEGIS_CONSOLE_URL: consoleUrl
  AEGIS_LOG_FORMAT: 'json'
  AEGIS_LOG_LEVEL: 'INFO'
}
var optional = union(
  empty(logAnalyticsWorkspaceGuid) ? {} : { AEGIS_LOG_ANALYTICS_WORKSPACE: logAnalyticsWorkspaceGuid },
  empty(sentinelWorkspaceId) ? {} : { AEGIS_SENTINEL_WORKSPACE: sentinelWorkspaceId },
  empty(servicenowInstance) ? {} : {
    AEGIS_SERVICENOW_INSTANCE: servicenowInstance
    AEGIS_SERVICENOW_USER: servicenowUser
    AEGIS_SERVICENOW_PASSWORD: '@Microsoft.KeyVault(VaultName=${keyVaultName};SecretName=servicenow-password)'
  },
  empty(jiraSite) ? {} : {
    AEGIS_JIRA_SITE: jiraSite
    AEGIS_JIRA_USER: jiraUser
    AEGIS_JIRA_PROJECT: jiraProject
    AEGIS_JIRA_TOKEN: '@Microsoft.KeyVault(VaultName=${keyVaultName};SecretName=jira-token)'
  }
)

resource plan 'Microsoft.Web/serverfarms@2024-04-01' = {
  // checkov:skip=CKV_AZURE_225: Flex Consumption zone redundancy exists only in some regions: enable it per region
  name: planName
  location: location
  tags: tags
  kind: 'functionapp'
  sku: { name: 'FC1', tier: 'FlexConsumption' }
  properties: { reserved: true }
}

resource site 'Microsoft.Web/sites@2024-04-01' = {
  // checkov:skip=CKV_AZURE_222: the console and approvals API serve SOC people's browsers; App Service Authentication guards every route
  // checkov:skip=CKV_AZURE_17: browsers sign in with Entra ID (App Service Authentication); client certificates would lock them out
  // checkov:skip=CKV_AZURE_212: Flex Consumption scales from zero; always-ready instances are a cost choice, not a safety one
  // checkov:skip=CKV_AZURE_213: Flex Consumption has no App Service health check; the host restarts failed workers itself
  name: name
  location: location
  tags: union(tags, { 'azd-service-name': 'aegis' })
  kind: 'functionapp,linux'
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: { '${identityId}': {} }
  }
  properties: {
    serverFarmId: plan.id
    httpsOnly: true
    clientCertMode: 'Optional'
    keyVaultReferenceIdentity: identityId
    functionAppConfig: {
      deployment: {
        storage: {
          type: 'blobContainer'
          value: deploymentContainerUrl
          authentication: { type: 'UserAssignedIdentity', userAssignedIdentityResourceId: identityId }
        }
      }
      scaleAndConcurrency: { maximumInstanceCount: maximumInstanceCount, instanceMemoryMB: instanceMemoryMB }
      runtime: { name: 'python', version: '3.11' }
    }
    siteConfig: {
      minTlsVersion: '1.2'
      ftpsState: 'Disabled'
      http20Enabled: true
      appSettings: concat(staticSettings, regionalConnections)
    }
  }
}

// App Service Authentication: sign-in with Entra ID in front of every route. The app believes the
// principal header only while this is on (WEBSITE_AUTH_ENABLED), and authorizes by app role.
resource auth 'Microsoft.Web/sites/config@2024-04-01' = {
  // checkov:skip=CKV_AZURE_66: this resource is the site's authsettingsV2 (App Service Authentication itself), not a site
  // checkov:skip=CKV_AZURE_63: this resource is the site's authsettingsV2 (App Service Authentication itself), not a site
  // checkov:skip=CKV_AZURE_222: this resource is the site's authsettingsV2 (App Service Authentication itself), not a site
  // checkov:skip=CKV_AZURE_80: this resource is the site's authsettingsV2 (App Service Authentication itself), not a site
  // checkov:skip=CKV_AZURE_13: this resource is the site's authsettingsV2 (App Service Authentication itself), not a site
  // checkov:skip=CKV_AZURE_88: this resource is the site's authsettingsV2 (App Service Authentication itself), not a site
  // checkov:skip=CKV_AZURE_65: this resource is the site's authsettingsV2 (App Service Authentication itself), not a site
  parent: site
  name: 'authsettingsV2'
  properties: {
    platform: { enabled: true }
    globalValidation: {
      requireAuthentication: true
      unauthenticatedClientAction: 'RedirectToLoginPage'
      redirectToProvider: 'azureactivedirectory'
      // Teams cannot sign in: the bot's endpoint checks the Bot Framework's signed token itself
      excludedPaths: ['/api/messages']
    }
    identityProviders: {
      azureActiveDirectory: {
        enabled: true
        registration: {
          clientId: authClientId
          openIdIssuer: '${environment().authentication.loginEndpoint}${tenantId}/v2.0'
        }
        validation: { allowedAudiences: ['api://${authClientId}'] }
      }
    }
    login: { tokenStore: { enabled: false } }
    httpSettings: { requireHttps: true }
  }
}

output id string = site.id
output name string = site.name
output url string = consoleUrl
