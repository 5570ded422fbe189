// Aegis: the whole pipeline in one deployment (`azd up`). Subscription scope: the resource group,
// the pipeline in it, and the subscription-wide roles the response needs.
targetScope = 'subscription'

@minLength(1)
@maxLength(40)
@description('Environment name (azd): names every resource.')
param environmentName string

@description('Region for all resources.')
param location string

@description('Client id of the Entra ID app registration people sign in to (app roles Aegis.Approver, Aegis.Analyst, Aegis.Reader): infra/grant-permissions.sh creates it.')
param authClientId string

@description('ARM ids of the AI accounts (Azure OpenAI, AI Foundry, AI services) whose resource logs go to the pipeline, comma-separated.')
param aiAccountIds string = ''

@description('Other regions of watched AI accounts, comma-separated (eastus,swedencentral): Azure Monitor sends an account\'s logs only to a namespace of its own region, so each gets one, consumed by the app.')
param diagnosticsRegions string = ''

@description('Enable the Defender for Cloud plan for AI services on this subscription (billed per tokens scanned): what raises the AI alerts.')
param enableDefenderForAi bool = true

@description('Object id of Defender for Cloud\'s service principal ("Windows Azure Security Resource Provider") in this tenant: infra/find-defender-principal.sh sets it.')
param defenderPrincipalId string

@description('A suffix of the Key Vault\'s name, kept in the azd environment (infra/find-defender-principal.sh): a new one after azd down.')
param vaultSuffix string = ''

@description('Optional: the ARM id of an existing Microsoft Sentinel workspace (tickets and delivery).')
param sentinelWorkspaceId string = ''

@description('Where incidents are delivered: empty, or a comma-separated list of sentinel, teams, defender_xdr.')
param deliverers string = ''

@description('The IANA time zone the console shows times in (Europe/Paris); UTC by default.')
param displayTimezone string = 'UTC'

@description('Watched subscriptions of other Entra tenants (Azure Lighthouse), SUBSCRIPTION=TENANT comma-separated: their events belong to that tenant. The deployment\'s own tenant is the default.')
param subscriptionTenants string = ''

@description('Optional ticket systems (open_ticket): sites and accounts; put the secrets in the Key Vault as servicenow-password / jira-token.')
param servicenowInstance string = ''
param servicenowUser string = ''
param jiraSite string = ''
param jiraUser string = ''
param jiraProject string = ''

@description('The AI estate inventory: subscriptions it reads through Resource Graph, comma-separated (empty: every one the app\'s identity can read; it gets Reader on this one).')
param inventorySubscriptions string = ''

@description('Tags that name an AI asset\'s owner, its criticality and its data classification, comma-separated each (matched without case).')
param ownerTags string = 'owner,aegis-owner'
param criticalityTags string = 'criticality,aegis-criticality'
param classificationTags string = 'data-classification,dataclassification,data_classification'

@description('Severity steps (-1, 0, 1) an incident moves by its asset\'s criticality, CRITICALITY=STEPS comma-separated.')
param criticalityWeights string = 'critical=1,low=-1'

@description('Severity of the inventory\'s blind-spot findings, as delivered.')
@allowed(['informational', 'low', 'medium', 'high', 'critical'])
param findingSeverity string = 'low'

@description('Grant Cognitive Services Contributor on the whole subscription (containment, key rotation).')
param grantAiContributor bool = true

var token = toLower(uniqueString(subscription().id, environmentName, location))
var aiAccounts = empty(aiAccountIds) ? [] : split(replace(aiAccountIds, ' ', ''), ',')
// regions besides the deployment's, each with a namespace of its own for the diagnostic settings there
var otherRegions = empty(diagnosticsRegions) ? [] : split(toLower(replace(diagnosticsRegions, ' ', '')), ',')
var tags = { 'azd-env-name': environmentName, application: 'aegis' }
var defenderHub = 'defender-alerts'
var diagnosticsHub = 'ai-diagnostics'
var consumerGroup = 'aegis'

resource rg 'Microsoft.Resources/resourceGroups@2024-03-01' = {
  name: 'rg-${environmentName}'
  location: location
  tags: tags
}

module identity 'modules/identity.bicep' = {
  scope: rg
  name: 'identity'
  params: { name: 'id-aegis-${token}', location: location, tags: tags }
}

module monitoring 'modules/monitoring.bicep' = {
  scope: rg
  name: 'monitoring'
  params: { workspaceName: 'log-aegis-${token}', appInsightsName: 'appi-aegis-${token}', location: location, tags: tags }
}

module storage 'modules/storage.bicep' = {
  scope: rg
  name: 'storage'
  params: { name: 'staegis${take(token, 16)}', location: location, tags: tags }
}

module eventhubs 'modules/eventhubs.bicep' = {
  scope: rg
  name: 'eventhubs'
  params: {
    name: 'evhns-aegis-${token}'
    location: location
    tags: tags
    defenderHub: defenderHub
    diagnosticsHub: diagnosticsHub
    consumerGroup: consumerGroup
  }
}

module regional 'modules/eventhubs.bicep' = [for region in otherRegions: {
  scope: rg
  name: 'eventhubs-${region}'
  params: {
    name: 'evhns-aegis-${token}-${region}'
    location: region
    tags: tags
    defenderHub: defenderHub
    diagnosticsHub: diagnosticsHub
    consumerGroup: consumerGroup
    alertsHub: false
    receiverPrincipalId: identity.outputs.principalId
  }
}]

// each region's Send-only rule, in the order of `ruleRegions`: for the diagnostic setting of an account there
var ruleRegions = concat([location], otherRegions)
var regionalRules = [for (region, i) in otherRegions: regional[i].outputs.sendRuleId]
var sendRules = concat([eventhubs.outputs.sendRuleId], regionalRules)

module vault 'modules/keyvault.bicep' = {
  scope: rg
  name: 'keyvault'
  // purge protection keeps a deleted vault's name 90 days: the suffix changes after `azd down`
  params: { name: 'kv-aegis-${take(toLower(uniqueString(token, vaultSuffix)), 13)}', location: location, tags: tags }
}

module app 'modules/functionapp.bicep' = {
  scope: rg
  name: 'functionapp'
  params: {
    name: 'func-aegis-${token}'
    planName: 'plan-aegis-${token}'
    location: location
    tags: tags
    identityId: identity.outputs.id
    identityClientId: identity.outputs.clientId
    storageBlobEndpoint: storage.outputs.blobEndpoint
    storageTableEndpoint: storage.outputs.tableEndpoint
    storageQueueEndpoint: storage.outputs.queueEndpoint
    deploymentContainerUrl: storage.outputs.deploymentContainerUrl
    eventHubNamespace: eventhubs.outputs.fullyQualifiedNamespace
    defenderHub: defenderHub
    diagnosticsHub: diagnosticsHub
    consumerGroup: consumerGroup
    appInsightsConnectionString: monitoring.outputs.appInsightsConnectionString
    authClientId: authClientId
    logAnalyticsWorkspaceGuid: monitoring.outputs.workspaceCustomerId
    sentinelWorkspaceId: sentinelWorkspaceId
    deliverers: deliverers
    subscriptionTenants: subscriptionTenants
    displayTimezone: displayTimezone
    inventorySubscriptions: inventorySubscriptions
    ownerTags: ownerTags
    criticalityTags: criticalityTags
    classificationTags: classificationTags
    criticalityWeights: criticalityWeights
    findingSeverity: findingSeverity
    regionalNamespaces: [for (region, i) in otherRegions: { region: region, namespace: regional[i].outputs.fullyQualifiedNamespace }]
    keyVaultName: vault.outputs.name
    servicenowInstance: servicenowInstance
    servicenowUser: servicenowUser
    jiraSite: jiraSite
    jiraUser: jiraUser
    jiraProject: jiraProject
  }
}

module bot 'modules/bot.bicep' = {
  scope: rg
  name: 'bot'
  params: {
    name: 'bot-aegis-${token}'
    tags: tags
    identityId: identity.outputs.id
    identityClientId: identity.outputs.clientId
    appUrl: app.outputs.url
  }
}

module roles 'modules/roles.bicep' = {
  scope: rg
  name: 'roles'
  params: {
    principalId: identity.outputs.principalId
    storageName: storage.outputs.name
    eventHubNamespaceName: eventhubs.outputs.name
    keyVaultName: vault.outputs.name
    workspaceName: 'log-aegis-${token}'
    appInsightsName: 'appi-aegis-${token}'
  }
  dependsOn: [monitoring]
}

module subscriptionRoles 'modules/subscription-roles.bicep' = {
  name: 'subscription-roles'
  params: { principalId: identity.outputs.principalId, grantAiContributor: grantAiContributor }
}

module sentinelRoles 'modules/sentinel-roles.bicep' = if (!empty(sentinelWorkspaceId)) {
  scope: resourceGroup(split(sentinelWorkspaceId, '/')[2], split(sentinelWorkspaceId, '/')[4])
  name: 'sentinel-roles'
  params: { workspaceName: last(split(sentinelWorkspaceId, '/')), principalId: identity.outputs.principalId }
}

module export 'modules/security-export.bicep' = {
  scope: rg
  name: 'security-export'
  params: {
    name: 'aegis-alerts-export'
    location: location
    tags: tags
    eventHubNamespaceName: eventhubs.outputs.name
    alertsHubName: defenderHub
    defenderPrincipalId: defenderPrincipalId
  }
}

module defenderForAi 'modules/defender-ai.bicep' = if (enableDefenderForAi) {
  name: 'defender-ai'
}

module diagnostics 'modules/ai-diagnostics.bicep' = [for (account, i) in aiAccounts: {
  scope: resourceGroup(split(account, '/')[2], split(account, '/')[4])
  name: 'ai-diagnostics-${i}'
  params: { accountName: last(split(account, '/')), hubName: diagnosticsHub, regions: ruleRegions, sendRules: sendRules }
}]

output AZURE_LOCATION string = location
output AZURE_RESOURCE_GROUP string = rg.name
output AZURE_FUNCTION_APP_NAME string = app.outputs.name
output AEGIS_CONSOLE_URL string = app.outputs.url
output AEGIS_EVENTHUB_NAMESPACE string = eventhubs.outputs.fullyQualifiedNamespace
output AEGIS_MANAGED_IDENTITY_PRINCIPAL_ID string = identity.outputs.principalId
output AEGIS_KEY_VAULT_URI string = vault.outputs.uri
output AEGIS_BOT_APP_ID string = bot.outputs.appId
