// One storage account without shared-key access: the deployment package (blob), Event Hubs
// checkpoints and the host's leases (blob), the correlation state, response records and approvals
// (tables), raw message bodies (blob). Every client uses the app's identity.
param name string
param location string
param tags object = {}
param deploymentContainer string = 'app-package'

resource account 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  // checkov:skip=CKV_AZURE_35: without virtual network integration (a later increment) the Flex Consumption app reaches it over its public endpoint; access is Entra ID + RBAC only
  // checkov:skip=CKV_AZURE_59: without virtual network integration (a later increment) the Flex Consumption app reaches it over its public endpoint; access is Entra ID + RBAC only (blob public access is off)
  // checkov:skip=CKV_AZURE_206: zone-redundant (ZRS) pipeline state; geo-replication of transient state is not worth its cost
  name: name
  location: location
  tags: tags
  kind: 'StorageV2'
  sku: { name: 'Standard_ZRS' }
  properties: {
    allowSharedKeyAccess: false
    allowBlobPublicAccess: false
    minimumTlsVersion: 'TLS1_2'
    supportsHttpsTrafficOnly: true
    defaultToOAuthAuthentication: true
    publicNetworkAccess: 'Enabled' // Flex Consumption without a virtual network reaches storage publicly
    networkAcls: { defaultAction: 'Allow', bypass: 'AzureServices' }
    encryption: {
      requireInfrastructureEncryption: true
      services: {
        blob: { enabled: true, keyType: 'Account' }
        file: { enabled: true, keyType: 'Account' }
        table: { enabled: true, keyType: 'Account' }
        queue: { enabled: true, keyType: 'Account' }
      }
      keySource: 'Microsoft.Storage'
    }
  }
}

resource blobs 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' = {
  parent: account
  name: 'default'
  properties: {
    deleteRetentionPolicy: { enabled: true, days: 7 }
    containerDeleteRetentionPolicy: { enabled: true, days: 7 }
  }
}

resource package 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: blobs
  name: deploymentContainer
  properties: { publicAccess: 'None' }
}

output id string = account.id
output name string = account.name
output blobEndpoint string = account.properties.primaryEndpoints.blob
output tableEndpoint string = account.properties.primaryEndpoints.table
output queueEndpoint string = account.properties.primaryEndpoints.queue
output deploymentContainerUrl string = '${account.properties.primaryEndpoints.blob}${deploymentContainer}'
