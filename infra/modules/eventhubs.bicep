// An ingest namespace: one hub for Defender for Cloud continuous export (the main namespace only),
// one for the AI accounts' diagnostic settings, each with the app's consumer group. The app reads
// with its identity (Event Hubs Data Receiver); diagnostic settings can only send with a SAS rule,
// so the namespace keeps local auth and offers them a Send-only rule and nothing more. Azure
// Monitor sends an account's logs only to a namespace of its region: main.bicep deploys one of
// these per region named in `diagnosticsRegions`, diagnostics hub only.
param name string
param location string
param tags object = {}
param defenderHub string
param diagnosticsHub string
param consumerGroup string
param partitions int = 4
param retentionDays int = 3
@description('Whether this namespace has the alerts hub too (the main one), or only the diagnostics hub (a region\'s).')
param alertsHub bool = true
@description('The app\'s identity, given Azure Event Hubs Data Receiver here (a region\'s namespace; the main one gets it in roles.bicep).')
param receiverPrincipalId string = ''

var names = alertsHub ? [defenderHub, diagnosticsHub] : [diagnosticsHub]
var eventHubsDataReceiver = 'a638d3c7-ab3a-418d-83e6-5f17a39d4fde'

resource namespace 'Microsoft.EventHub/namespaces@2024-01-01' = {
  name: name
  location: location
  tags: tags
  sku: { name: 'Standard', tier: 'Standard', capacity: 1 }
  properties: {
    minimumTlsVersion: '1.2'
    disableLocalAuth: false // continuous export and diagnostic settings send with a SAS rule only
    isAutoInflateEnabled: true
    maximumThroughputUnits: 4
  }
}

resource hubs 'Microsoft.EventHub/namespaces/eventhubs@2024-01-01' = [for hub in names: {
  parent: namespace
  name: hub
  properties: {
    partitionCount: partitions
    messageRetentionInDays: retentionDays
  }
}]

resource groups 'Microsoft.EventHub/namespaces/eventhubs/consumergroups@2024-01-01' = [for (hub, i) in names: {
  parent: hubs[i]
  name: consumerGroup
}]

resource producers 'Microsoft.EventHub/namespaces/authorizationRules@2024-01-01' = {
  parent: namespace
  name: 'producers-send-only'
  properties: { rights: ['Send'] }
}

output id string = namespace.id
output name string = namespace.name
output fullyQualifiedNamespace string = '${namespace.name}.servicebus.windows.net'
resource receiver 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (!empty(receiverPrincipalId)) {
  name: guid(namespace.id, receiverPrincipalId, eventHubsDataReceiver)
  scope: namespace
  properties: { principalId: receiverPrincipalId, principalType: 'ServicePrincipal', roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', eventHubsDataReceiver) }
}

output defenderHubId string = alertsHub ? hubs[0].id : ''
output diagnosticsHubId string = hubs[length(names) - 1].id
output sendRuleId string = producers.id
