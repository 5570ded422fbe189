// The ingest namespace: one hub for Defender for Cloud continuous export, one for the AI accounts'
// diagnostic settings, each with the app's consumer group. The app reads with its identity (Event
// Hubs Data Receiver); the producers (continuous export, diagnostic settings) can only use a SAS
// rule, so the namespace keeps local auth and offers them a Send-only rule and nothing more.
param name string
param location string
param tags object = {}
param defenderHub string
param diagnosticsHub string
param consumerGroup string
param partitions int = 4
param retentionDays int = 3

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

resource hubs 'Microsoft.EventHub/namespaces/eventhubs@2024-01-01' = [for hub in [defenderHub, diagnosticsHub]: {
  parent: namespace
  name: hub
  properties: {
    partitionCount: partitions
    messageRetentionInDays: retentionDays
  }
}]

resource groups 'Microsoft.EventHub/namespaces/eventhubs/consumergroups@2024-01-01' = [for (hub, i) in [defenderHub, diagnosticsHub]: {
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
output defenderHubId string = hubs[0].id
output diagnosticsHubId string = hubs[1].id
output sendRuleId string = producers.id
